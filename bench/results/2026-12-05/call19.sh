# Device call 19 (after call 18, a fresh box): FileSource reading with every core but 4 (12 threads on this box)
# and calibrate's two new measurements: the file-tier read on the pre-quantized copy runs stream from (the fp8 copy
# is linked beside the checkpoint for calibrate only, then unlinked so the discrete rows quantize at load as
# calibrate's loader timings do) and Gemma loaded whole with its first encode. Then fresh `generate` runs planned
# with that profile: W1 one pool at 16 GiB (12 threads, and 8 for the comparison), W1 at 32 and 16 GiB discrete,
# the 10 s clip one pool. `run` with carry [".whl"]; ~560 s with the checkpoint's generation.
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
ln -sf /dev/shm/ltx2.fp8.safetensors "$CKPT_DIR/ltx2.fp8.safetensors"
CK=(--checkpoint-path "$CKPT_DIR/ltx2.safetensors" --gemma-root "$GEMMA_DIR")
timeout 170 python3 -m ltx2_edge calibrate --device cuda:0 "${CK[@]}" --quiet > $X/calibrate.txt 2>&1; pack
rm -f "$CKPT_DIR/ltx2.fp8.safetensors"
grep -iE "checkpoint read|^  load:|Traceback|Error" $X/calibrate.txt | cut -c1-400 | head -8
python3 -c "
import json, glob; d = json.load(open(glob.glob('$HOME/.cache/ltx2-edge/profiles/*.json')[0]))
l = d['timings']['load']; print({k: l.get(k) for k in ('gemma_s', 'gemma_bytes', 'gemma_encode_s', 'quantized_gbps')}, d['seconds'], 's')"; t
source bench/device/predict.sh
VS=$PWD/bench/device/variant_site
CK=(--checkpoint-path /dev/shm/ltx2.fp8.safetensors --gemma-root "$GEMMA_DIR")
go w1-16u --budget 16GiB --unified
left 420 && LTX2_BENCH_FILE_READERS=8 PYTHONPATH=$VS:$PYTHONPATH go w1-16u-r8 --budget 16GiB --unified
CK=(--checkpoint-path "$CKPT_DIR/ltx2.safetensors" --gemma-root "$GEMMA_DIR")
left 460 && go w1-32 --budget 32GiB
left 500 && go w1-16 --budget 16GiB
CK=(--checkpoint-path /dev/shm/ltx2.fp8.safetensors --gemma-root "$GEMMA_DIR")
left 530 && go c10-16u --budget 16GiB --unified --num-frames 241
cat "$OUT/prediction.md"
echo "call took $(( $(date +%s) - CALL_START )) s"
