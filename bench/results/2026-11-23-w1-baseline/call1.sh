# Device command (issue 2 proof): full-size checkpoint, then W1 end to end in bf16 with no budget, first run
# right after the page cache is dropped (cold, where the box allows dropping it) and a second warm run; then the
# official pipeline on the same files as the peer. Logs and reports land in $OUT.
set -o pipefail
source bench/device/prelude.sh
source bench/device/make_full.sh
PROMPT="A red kite dances over a windy beach at sunset while waves crash and gulls call."
run_ours() {  # $1 = label, rest = extra flags
  local label=$1; shift
  python3 -m ltx2_edge generate --checkpoint-path "$CKPT_DIR/ltx2.safetensors" --gemma-root "$GEMMA_DIR" \
    --prompt "$PROMPT" --output-path "/tmp/$label.mp4" --overwrite "$@" 2>&1 | grep -v "step [0-9]*/" | tee "$OUT/$label.log"
  cp "/tmp/$label.report.json" "$OUT/" 2>/dev/null
}
sync; if echo 3 > /proc/sys/vm/drop_caches 2>/dev/null; then echo "page cache dropped: cold run"; else echo "page cache NOT dropped: first run is warm"; fi | tee "$OUT/cache.log"
run_ours w1_bf16_first
run_ours w1_bf16_warm
timeout 300 python3 bench/peer_official.py --checkpoint-path "$CKPT_DIR/ltx2.safetensors" --gemma-root "$GEMMA_DIR" \
  --out "$OUT/peer_official_bf16_cfg.json" 2>&1 | tail -25
