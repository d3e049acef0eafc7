# Device call 4 (issue 17 items 1-2, issue 16 item 4's first rows): `ltx2-edge calibrate` on the H200 (its profile
# lands in the cache folder, so every run after it plans with the measured rates), then fresh `generate` processes:
# W1 (512x288, 97 frames, 20 steps, CFG, fp8) and a 10 s clip (241 frames) at 32 and 16 GiB, discrete and one pool.
# Each run's report keeps the plan it made before loading; bench/prediction_table.py sets it against measurement.
# `run` with carry [".whl"].
set -o pipefail
CALL_START=$(date +%s)
source bench/device/prelude.sh
source bench/device/make_full.sh >/dev/null
CK=(--checkpoint-path "$CKPT_DIR/ltx2.safetensors" --gemma-root "$GEMMA_DIR")
python3 -m ltx2_edge calibrate --device cuda:0 --checkpoint-path "$CKPT_DIR/ltx2.safetensors" 2>&1 | tail -25 | tee "$OUT/calibrate.txt"
cp ~/.cache/ltx2-edge/profiles/*.json "$OUT/" 2>/dev/null; ls ~/.cache/ltx2-edge/profiles/
go() { label=$1; shift; python3 bench/prediction_table.py run --dir /tmp/pt --video-dir /tmp --label "$label" -- \
  "${CK[@]}" --prompt "A red kite dances over a windy beach at sunset while waves crash and gulls call." \
  --quiet "$@" | tail -1 | cut -c1-300; echo "  t=$(( $(date +%s) - CALL_START )) s"; }
go w1-32 --budget 32GiB
go w1-16 --budget 16GiB
go w1-16u --budget 16GiB --unified
go w1-32u --budget 32GiB --unified
go c10-32 --budget 32GiB --num-frames 241
go c10-16 --budget 16GiB --num-frames 241
go c10-16u --budget 16GiB --num-frames 241 --unified
python3 bench/prediction_table.py table --dir /tmp/pt --out "$OUT/prediction.json" --markdown "$OUT/prediction.md"
tar -czf "$OUT/reports.tgz" -C /tmp/pt .
echo "call took $(( $(date +%s) - CALL_START )) s"
