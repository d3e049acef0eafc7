# Device call 16 (after call 15, a fresh box): calibrate with its pinning timed as the loader's parts (packing per
# block, the pinned buffer made at a run's size) and its cold read dropping only its own range, then fresh `generate`
# processes on a warm page cache planned with that profile: W1 at 16 and 32 GiB, the 10 s clip at 16 GiB (graphed
# inside the capture room), then `ltx2-edge quantize --to fp8` into /dev/shm and the one-pool rows: the 10 s clip and
# W1 at 16 GiB. `run` with carry [".whl"]; ~450 s with the checkpoint's generation.
set -o pipefail
CALL_START=$(date +%s)
source bench/device/prelude.sh
t() { echo "  t=$(( $(date +%s) - CALL_START )) s"; }
left() { [ $(( $(date +%s) - CALL_START )) -lt "$1" ]; }
X=/tmp/extras; mkdir -p $X
pack() { cp ~/.cache/ltx2-edge/profiles/*.json $X/ 2>/dev/null; tar -czf "$OUT/extras.tgz" -C $X .; }
source bench/device/make_full.sh >/dev/null
CK=(--checkpoint-path "$CKPT_DIR/ltx2.safetensors" --gemma-root "$GEMMA_DIR")
t
timeout 150 python3 -m ltx2_edge calibrate --device cuda:0 "${CK[@]}" --quiet > $X/calibrate.txt 2>&1
grep -v "^  \|^Traceback" $X/calibrate.txt | tail -22; t; pack
python3 -c "
import json, glob; d = json.load(open(glob.glob('$HOME/.cache/ltx2-edge/profiles/*.json')[0]))
print(json.dumps(d['timings']['load'], indent=1))"
source bench/device/predict.sh
go w1-16 --budget 16GiB
go w1-32 --budget 32GiB
go c10-16 --budget 16GiB --num-frames 241
left 330 && /usr/bin/time -f "quantize: %e s" python3 -m ltx2_edge quantize --checkpoint-path "$CKPT_DIR/ltx2.safetensors" \
  --to fp8 --device cuda --out /dev/shm/ltx2.fp8.safetensors 2>&1 | grep -vE "^\[|it/s" | tail -3; t
CK=(--checkpoint-path /dev/shm/ltx2.fp8.safetensors --gemma-root "$GEMMA_DIR")
left 400 && [ -f /dev/shm/ltx2.fp8.safetensors ] && go c10-16u --budget 16GiB --unified --num-frames 241
left 500 && [ -f /dev/shm/ltx2.fp8.safetensors ] && go w1-16u --budget 16GiB --unified
cat "$OUT/prediction.md"
echo "call took $(( $(date +%s) - CALL_START )) s"
