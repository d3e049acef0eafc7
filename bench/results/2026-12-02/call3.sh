# Device call 3 (issue 15): call 2's serve at 32 GiB again after the fix its failure led to (GemmaText held for the
# batch's text phase had no .parameters); the checkpoint is made fresh, so it is page-cached. `run` carry [".whl"].
set -o pipefail
CALL_START=$(date +%s)
source bench/device/prelude.sh
source bench/device/make_full.sh >/dev/null
SB=(--checkpoint-path "$CKPT_DIR/ltx2.safetensors" --gemma-root "$GEMMA_DIR")
python3 bench/service_bench.py serve --clips 8 --budget 32GiB --out "$OUT/serve_32.json" "${SB[@]}" 2>&1 | tail -3
echo "call took $(( $(date +%s) - CALL_START )) s"
