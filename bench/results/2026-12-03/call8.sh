# Device call 8, the first of three on one box held warm (calls 9 and 10 follow at once; each prints the GPU's UUID).
# Issue 17: call 7 as written (calibrate with the model files, then fresh `generate` processes planned with its
# profile: W1 32 GiB, W1 16 GiB, the 10 s clip at 32 GiB). Issue 15: `serve` 8 W1 clips at 32 GiB.
# `run` with carry [".whl"].
set -o pipefail
CALL_START=$(date +%s)
source bench/device/prelude.sh
source bench/device/make_full.sh >/dev/null
CK=(--checkpoint-path "$CKPT_DIR/ltx2.safetensors" --gemma-root "$GEMMA_DIR")
t() { echo "  t=$(( $(date +%s) - CALL_START )) s"; }
t
timeout 240 python3 -m ltx2_edge calibrate --device cuda:0 "${CK[@]}" --quiet > "$OUT/calibrate.txt" 2>&1; tail -32 "$OUT/calibrate.txt"; t
cp ~/.cache/ltx2-edge/profiles/*.json "$OUT/" 2>/dev/null
table() { python3 bench/prediction_table.py table --dir /tmp/pt --out "$OUT/prediction.json" --markdown "$OUT/prediction.md" \
  >/dev/null; tar -czf "$OUT/reports.tgz" -C /tmp/pt .; }  # after every run: a cut-off call keeps its rows
go() { label=$1; shift; python3 bench/prediction_table.py run --dir /tmp/pt --video-dir /tmp --label "$label" -- \
  "${CK[@]}" --prompt "A red kite dances over a windy beach at sunset while waves crash and gulls call." \
  --quiet "$@" | tail -1 | cut -c1-120; t; table; }
go w1-32 --budget 32GiB
go w1-16 --budget 16GiB
go c10-32 --budget 32GiB --num-frames 241
cat "$OUT/prediction.md"
python3 bench/service_bench.py serve --clips 8 --budget 32GiB --out "$OUT/serve_32.json" "${CK[@]}" 2>&1 | tail -2; t
echo "call took $(( $(date +%s) - CALL_START )) s"
