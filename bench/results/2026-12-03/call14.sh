# Device call 14 (after call 13, a fresh box): the 10 s and 20 s clips at 16 GiB again, now that a capture that runs
# out of memory leaves its except block before the steps fall back to eager (call 13's fallback ran the first eager
# step while the failed forward's tensors were still held), then `ltx2-edge quantize --to fp8` into /dev/shm (the
# disk cannot hold it beside the checkpoint) and the one-pool W1 row at 16 GiB reading it.
# `run` with carry [".whl"]; ~330 s with the checkpoint's generation.
set -o pipefail
CALL_START=$(date +%s)
source bench/device/prelude.sh
t() { echo "  t=$(( $(date +%s) - CALL_START )) s"; }
left() { [ $(( $(date +%s) - CALL_START )) -lt "$1" ]; }
source bench/device/make_full.sh >/dev/null
CK=(--checkpoint-path "$CKPT_DIR/ltx2.safetensors" --gemma-root "$GEMMA_DIR")
t
source bench/device/predict.sh
go c10-16 --budget 16GiB --num-frames 241
grep -h "graph" /tmp/pt/c10-16.log | grep -v "^\[" | tail -2
left 200 && go c20-16 --budget 16GiB --num-frames 481
left 260 && /usr/bin/time -f "quantize: %e s" python3 -m ltx2_edge quantize --checkpoint-path "$CKPT_DIR/ltx2.safetensors" \
  --to fp8 --device cuda --out /dev/shm/ltx2.fp8.safetensors 2>&1 | grep -vE "^\[|it/s" | tail -3; t
CK=(--checkpoint-path /dev/shm/ltx2.fp8.safetensors --gemma-root "$GEMMA_DIR")
left 330 && [ -f /dev/shm/ltx2.fp8.safetensors ] && go w1-16u --budget 16GiB --unified
cat "$OUT/prediction.md"
echo "call took $(( $(date +%s) - CALL_START )) s"
