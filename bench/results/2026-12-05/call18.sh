# Device call 18 (a fresh box): why the one-pool step reads its blocks at ~14 GB/s. bench/file_rates.py on the
# checkpoint (page cache) and its fp8 copy (/dev/shm): readers x staging, alone vs beside a busy main thread, switch
# interval 5 vs 0.5 ms; the CLI's imports (-X importtime); calibrate; then fresh one-pool `generate` runs as shipped
# and with the switch interval / reader count changed (bench/device/variant_site), W1 at 16 GiB discrete last.
# `run` with carry [".whl"]; ~500 s with the checkpoint's generation.
set -o pipefail
CALL_START=$(date +%s)
source bench/device/prelude.sh
t() { echo "  t=$(( $(date +%s) - CALL_START )) s"; }
left() { [ $(( $(date +%s) - CALL_START )) -lt "$1" ]; }
X=/tmp/extras; mkdir -p $X
pack() { cp ~/.cache/ltx2-edge/profiles/*.json $X/ 2>/dev/null; tar -czf "$OUT/extras.tgz" -C $X .; }
source bench/device/make_full.sh >/dev/null
t
/usr/bin/time -f "quantize: %e s" python3 -m ltx2_edge quantize --checkpoint-path "$CKPT_DIR/ltx2.safetensors" \
  --to fp8 --device cuda --out /dev/shm/ltx2.fp8.safetensors 2>&1 | grep -vE "^\[|it/s" | tail -2; t
python3 bench/file_rates.py --files "$CKPT_DIR/ltx2.safetensors" /dev/shm/ltx2.fp8.safetensors --blocks 8 \
  --readers 4,8,12 --staging 64 --json $OUT/file_rates.json; t
python3 bench/file_rates.py --files /dev/shm/ltx2.fp8.safetensors --blocks 8 --readers 4,8 --staging 128 \
  --modes alone,busy --json $X/file_rates_128.json; pack; t
for i in 1 2; do python3 -c "import time; t=time.perf_counter(); import ltx2_edge.cli, ltx2_edge.pipeline; print('imports %.2f s' % (time.perf_counter()-t))"; done
python3 -X importtime -c "import ltx2_edge.cli, ltx2_edge.pipeline" 2> $X/importtime.txt
sort -t'|' -k2 -n -r $X/importtime.txt | head -25; pack; t
CK=(--checkpoint-path "$CKPT_DIR/ltx2.safetensors" --gemma-root "$GEMMA_DIR")
timeout 150 python3 -m ltx2_edge calibrate --device cuda:0 "${CK[@]}" --quiet > $X/calibrate.txt 2>&1; pack
grep -i "checkpoint read" $X/calibrate.txt | head -4; t
source bench/device/predict.sh
CK=(--checkpoint-path /dev/shm/ltx2.fp8.safetensors --gemma-root "$GEMMA_DIR")
VS=$PWD/bench/device/variant_site
go w1-16u --budget 16GiB --unified
left 450 && LTX2_BENCH_SWITCH_MS=0.5 PYTHONPATH=$VS:$PYTHONPATH go w1-16u-sw --budget 16GiB --unified
left 480 && LTX2_BENCH_SWITCH_MS=0.5 LTX2_BENCH_FILE_READERS=8 PYTHONPATH=$VS:$PYTHONPATH go w1-16u-sw-r8 --budget 16GiB --unified
left 510 && LTX2_BENCH_FILE_READERS=8 PYTHONPATH=$VS:$PYTHONPATH go w1-16u-r8 --budget 16GiB --unified
CK=(--checkpoint-path "$CKPT_DIR/ltx2.safetensors" --gemma-root "$GEMMA_DIR")
left 540 && go w1-16 --budget 16GiB
cat "$OUT/prediction.md"
echo "call took $(( $(date +%s) - CALL_START )) s"
