# Device command (issue 3, discrete GPU): W1 with fp8 at 32, 24 and 16 GiB (allocator capped), bf16 with no
# budget in the same call for the per-step ratio, then a CUDA-graph experiment of one step (issue 5 groundwork).
set -o pipefail
source bench/device/prelude.sh
source bench/device/make_full.sh
T0=$(date +%s)
PROMPT="A red kite dances over a windy beach at sunset while waves crash and gulls call."
mkdir -p /tmp/reports
run() {  # $1 label, rest: flags
  local label=$1; shift
  echo "=== $label ($(( $(date +%s) - T0 )) s into the call)"
  python3 -m ltx2_edge generate --checkpoint-path "$CKPT_DIR/ltx2.safetensors" --gemma-root "$GEMMA_DIR" \
    --prompt "$PROMPT" --output-path "/tmp/$label.mp4" --overwrite "$@" 2>&1 | grep -v "step [0-9]*/" | tail -9
  cp "/tmp/$label.report.json" /tmp/reports/ 2>/dev/null
}
run fp8_32g --budget 32GiB --quantization fp8
run fp8_24g --budget 24GiB --quantization fp8
run fp8_16g --budget 16GiB --quantization fp8
run bf16_none --budget none --quantization bf16
for q in fp8 bf16; do
  [ $(( $(date +%s) - T0 )) -lt 430 ] && timeout 120 python3 bench/graph_step.py --checkpoint-path \
    "$CKPT_DIR/ltx2.safetensors" --quantization $q --out /tmp/reports/graph_$q.json 2>&1 | tail -8
done
python3 - <<'PY'
import json, glob, os
out = {os.path.basename(p): json.load(open(p)) for p in sorted(glob.glob("/tmp/reports/*.json"))}
json.dump(out, open(os.environ["OUT"] + "/budget_discrete_runs.json", "w"), indent=1, default=str)
PY
