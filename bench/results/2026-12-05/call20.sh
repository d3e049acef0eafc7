# Device call 20 (after call 19, a fresh box): calibrate with Gemma timed again in its fresh start-up process (call
# 19's in-process first encode, 3.6 s, had compiled kernels; the runs' took ~1.1 s), then fresh `generate` runs
# planned with that profile, W1 at 32 and 16 GiB discrete, and ltx-pipelines 1.0.0 bf16 (CFG, no cap) on the same
# box as a fresh process timed from outside (the peer of issue 16's end-to-end ratio).
# `run` with carry [".whl"]; ~330 s with the checkpoint's generation; the device time left after two refused starts
# (~250 s once the box is up) decides how far it gets: every part writes its files as it ends.
set -o pipefail
CALL_START=$(date +%s)
source bench/device/prelude.sh
t() { echo "  t=$(( $(date +%s) - CALL_START )) s"; }
left() { [ $(( $(date +%s) - CALL_START )) -lt "$1" ]; }
X=/tmp/extras; mkdir -p $X
pack() { cp ~/.cache/ltx2-edge/profiles/*.json $X/ 2>/dev/null; tar -czf "$OUT/extras.tgz" -C $X .; }
source bench/device/make_full.sh >/dev/null
t
CK=(--checkpoint-path "$CKPT_DIR/ltx2.safetensors" --gemma-root "$GEMMA_DIR")
timeout 120 python3 -m ltx2_edge calibrate --device cuda:0 "${CK[@]}" --quiet > $X/calibrate.txt 2>&1; pack
grep -E "^  load:|^  startup:|Gemma in a fresh" $X/calibrate.txt | cut -c1-300 | sed 's/.*; in a fresh/  ... in a fresh/'
python3 -c "
import json, glob; d = json.load(open(glob.glob('$HOME/.cache/ltx2-edge/profiles/*.json')[0]))
l = d['timings']['load']; print({k: l.get(k) for k in ('gemma_s', 'gemma_bytes', 'gemma_encode_s')}, d['seconds'], 's')
print(d['timings_detail']['raw']['load'].get('gemma'), d['timings_detail']['raw']['load'].get('gemma_fresh'))"; t
source bench/device/predict.sh
go w1-32 --budget 32GiB
left 200 && /usr/bin/time -f "peer process wall %e s" timeout 200 python3 bench/peer_official.py "${CK[@]}" \
  --out "$X/peer_official_bf16_cfg.json" 2>&1 | grep -vE "^\[|it/s" | tail -12; pack; t
left 260 && go w1-16 --budget 16GiB
cat "$OUT/prediction.md"
echo "call took $(( $(date +%s) - CALL_START )) s"
