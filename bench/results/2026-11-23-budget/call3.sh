# Device command (issues 3 and 4): W1 under budgets on the full-size checkpoint. Fused 8-bit kernels first, then
# fp8 at 32 GiB (transformer resident), 24 and 16 GiB (blocks streamed from pinned host), bf16 with no budget
# (reference, same call), the plans that bf16 gets at 24/16 GiB, and the unified rehearsal (one pool, blocks
# streamed from a pre-quantized file) at 16 GiB. Logs and reports land in $OUT.
set -o pipefail
source bench/device/prelude.sh
source bench/device/make_full.sh
T0=$(date +%s)
python3 bench/quant_kernels.py /tmp/quant_kernels_fused.json 2>&1 | grep -E "^video|^audio|fused|bf16 " | head -40
PROMPT="A red kite dances over a windy beach at sunset while waves crash and gulls call."
run() {  # $1 label, $2 checkpoint, rest: flags
  local label=$1 ckpt=$2; shift 2
  echo "=== $label ($(( $(date +%s) - T0 )) s into the call)"
  python3 -m ltx2_edge generate --checkpoint-path "$ckpt" --gemma-root "$GEMMA_DIR" --prompt "$PROMPT" \
    --output-path "/tmp/$label.mp4" --overwrite "$@" 2>&1 | grep -v "step [0-9]*/" | tail -12
  cp "/tmp/$label.report.json" "/tmp/reports/" 2>/dev/null
}
mkdir -p /tmp/reports
run fp8_32g "$CKPT_DIR/ltx2.safetensors" --budget 32GiB --quantization fp8
run bf16_none "$CKPT_DIR/ltx2.safetensors" --budget none --quantization bf16
run fp8_24g "$CKPT_DIR/ltx2.safetensors" --budget 24GiB --quantization fp8
run fp8_16g "$CKPT_DIR/ltx2.safetensors" --budget 16GiB --quantization fp8
for b in 24GiB 16GiB; do
  python3 -m ltx2_edge plan --checkpoint-path "$CKPT_DIR/ltx2.safetensors" --gemma-root "$GEMMA_DIR" --budget $b \
    --quantization bf16 2>&1 | tail -3
done
echo "=== quantize to fp8 in /dev/shm ($(( $(date +%s) - T0 )) s)"
/usr/bin/time -f "quantize: %e s, max RSS %M KB" python3 -m ltx2_edge quantize --checkpoint-path \
  "$CKPT_DIR/ltx2.safetensors" --to fp8 --out /dev/shm/ltx2-fp8.safetensors --device cuda 2>&1 | tail -2
run fp8_16g_unified /dev/shm/ltx2-fp8.safetensors --budget 16GiB --unified --quantization fp8
if [ $(( $(date +%s) - T0 )) -lt 420 ]; then
  run fp8_32g_unified /dev/shm/ltx2-fp8.safetensors --budget 32GiB --unified --quantization fp8
fi
python3 - <<'PY'
import json, glob, os
out = {os.path.basename(p): json.load(open(p)) for p in sorted(glob.glob("/tmp/reports/*.json"))}
out["quant_kernels_fused"] = json.load(open("/tmp/quant_kernels_fused.json"))
json.dump(out, open(os.environ["OUT"] + "/budget_runs.json", "w"), indent=1, default=str)
PY
