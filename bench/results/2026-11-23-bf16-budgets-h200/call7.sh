# Device command (issue 3): bf16 at 24 and 16 GiB on a discrete GPU, where Gemma's layers and the transformer's
# blocks both stream from pinned host memory.
set -o pipefail
source bench/device/prelude.sh >/dev/null
source bench/device/make_full.sh >/dev/null
PROMPT="A red kite dances over a windy beach at sunset while waves crash and gulls call."
for b in 24 16; do
  python3 -m ltx2_edge generate --checkpoint-path "$CKPT_DIR/ltx2.safetensors" --gemma-root "$GEMMA_DIR" \
    --prompt "$PROMPT" --output-path "/tmp/bf16_${b}g.mp4" --overwrite --budget ${b}GiB --quantization bf16 2>&1 \
    | grep -v "step [0-9]*/" | tail -8
  cp "/tmp/bf16_${b}g.report.json" "$OUT/" 2>/dev/null
done
