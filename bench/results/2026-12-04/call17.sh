# Device call 17 (after call 16, a fresh box; what is left of the session's device time): calibrate with the
# transformer loader's per-block rate timed over a 12-block load (the 2-vs-4-block difference was ~0.06 s, its rate
# 13-27 GB/s from box to box), then W1 at 32 and 16 GiB planned with that profile on a warm page cache.
# `run` with carry [".whl"]; ~210 s with the checkpoint's generation.
set -o pipefail
CALL_START=$(date +%s)
source bench/device/prelude.sh
t() { echo "  t=$(( $(date +%s) - CALL_START )) s"; }
X=/tmp/extras; mkdir -p $X
pack() { cp ~/.cache/ltx2-edge/profiles/*.json $X/ 2>/dev/null; tar -czf "$OUT/extras.tgz" -C $X .; }
source bench/device/make_full.sh >/dev/null
CK=(--checkpoint-path "$CKPT_DIR/ltx2.safetensors" --gemma-root "$GEMMA_DIR")
t
timeout 150 python3 -m ltx2_edge calibrate --device cuda:0 "${CK[@]}" --quiet > $X/calibrate.txt 2>&1; pack
python3 -c "
import json, glob; d = json.load(open(glob.glob('$HOME/.cache/ltx2-edge/profiles/*.json')[0]))
print(json.dumps(d['timings']['load'], indent=1)); print(d['seconds'], 's')"; t
source bench/device/predict.sh
left() { [ $(( $(date +%s) - CALL_START )) -lt "$1" ]; }
go w1-32 --budget 32GiB
left 200 && go w1-16 --budget 16GiB
cat "$OUT/prediction.md"
echo "call took $(( $(date +%s) - CALL_START )) s"
