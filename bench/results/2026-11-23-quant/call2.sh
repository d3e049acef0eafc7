# Device command (issue 4 proof): 8-bit GEMM kernels at W1 shapes, W1 end to end with fp8 (auto), then
# fidelity + speed of every quantization policy against bf16 over three seeds. Results land in $OUT.
set -o pipefail
source bench/device/prelude.sh
source bench/device/make_full.sh
python3 bench/quant_kernels.py "$OUT/quant_kernels_h100.json" 2>&1 | tail -30
PROMPT="A red kite dances over a windy beach at sunset while waves crash and gulls call."
for run in w1_fp8_a w1_fp8_b; do
  python3 -m ltx2_edge generate --checkpoint-path "$CKPT_DIR/ltx2.safetensors" --gemma-root "$GEMMA_DIR" \
    --prompt "$PROMPT" --output-path "/tmp/$run.mp4" --overwrite --quantization fp8 2>&1 | grep -v "step [0-9]*/" \
    | tee "/tmp/$run.log"
done
cp /tmp/w1_fp8_b.log /tmp/w1_fp8_b.report.json "$OUT/"
timeout 360 python3 bench/quant_fidelity.py --checkpoint-path "$CKPT_DIR/ltx2.safetensors" --gemma-root "$GEMMA_DIR" \
  --out "$OUT/quant_fidelity_h100.json" 2>&1 | grep -v "seed'" | tee "$OUT/quant_fidelity.log" | tail -20
