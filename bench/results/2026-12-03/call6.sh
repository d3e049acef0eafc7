# Device call 6 (issue 17 item 2, with the prediction model of 703a231): `ltx2-edge calibrate` on the H200 with the
# checkpoint and Gemma folder (its profile lands in the cache folder, so the runs after it plan with what it
# measured), then fresh `generate` processes — W1 and a 10 s clip (241 frames) at 32 and 16 GiB, discrete and one
# pool at 32 GiB — whose reports keep the plan made before loading; bench/prediction_table.py sets them against
# measurement. Last, issue 15: the phased batch (4 W1 clips, 32 GiB) after the per-stage collection and the SDPA
# timing left a batch's critical path, with a timeline of where the batch turns to each clip. `run` carry [".whl"].
set -o pipefail
CALL_START=$(date +%s)
source bench/device/prelude.sh
source bench/device/make_full.sh >/dev/null
CK=(--checkpoint-path "$CKPT_DIR/ltx2.safetensors" --gemma-root "$GEMMA_DIR")
t() { echo "  t=$(( $(date +%s) - CALL_START )) s"; }
python3 -m ltx2_edge calibrate --device cuda:0 "${CK[@]}" --quiet 2>&1 | tail -45 | tee "$OUT/calibrate.txt"; t
cp ~/.cache/ltx2-edge/profiles/*.json "$OUT/" 2>/dev/null
go() { label=$1; shift; python3 bench/prediction_table.py run --dir /tmp/pt --video-dir /tmp --label "$label" -- \
  "${CK[@]}" --prompt "A red kite dances over a windy beach at sunset while waves crash and gulls call." \
  --quiet "$@" | tail -1 | cut -c1-200; t; table; }
table() { python3 bench/prediction_table.py table --dir /tmp/pt --out "$OUT/prediction.json" --markdown "$OUT/prediction.md" \
  >/dev/null; tar -czf "$OUT/reports.tgz" -C /tmp/pt .; }  # after every run: a cut-off call keeps its rows
go w1-32 --budget 32GiB
go w1-32b --budget 32GiB
go w1-16 --budget 16GiB
go w1-32u --budget 32GiB --unified
go c10-32 --budget 32GiB --num-frames 241
go c10-16 --budget 16GiB --num-frames 241
cat "$OUT/prediction.md"
python3 bench/service_bench.py phased --clips 4 --budget 32GiB --out "$OUT/phased_32.json" "${CK[@]}" 2>&1 | tail -1; t
echo "call took $(( $(date +%s) - CALL_START )) s"
