# Device command (issue 6): the decode stage alone on the full-size decoders (bench/decode_bench.py): video
# decode, audio decode + vocoder, serial vs overlapped (audio on its own CUDA stream), H.264 + AAC apart, and the
# whole stage streaming into the MP4 writer; W1 (512x288, 97 frames) and 1280x704, 121 frames at 32 and 16 GiB,
# plus 8 GiB, where the planner tiles the 1280x704 clip (4 temporal tiles), so the chunked path runs on the GPU
# too. Logs and the JSON land in $OUT. ~85 s checkpoint generation (when absent) + ~2-3 min of cases.
set -o pipefail
source bench/device/prelude.sh
source bench/device/make_full.sh
T0=$(date +%s)
python3 bench/decode_bench.py --checkpoint-path "$CKPT_DIR/ltx2.safetensors" --device cuda \
  --sizes 512x288x97,1280x704x121 --budgets 32,16,8 --repeats 3 --encode-repeats 1 \
  --out "$OUT/decode_bench.json" 2>&1 | tee "$OUT/decode_bench.log"
echo "decode bench: $(( $(date +%s) - T0 )) s" | tee -a "$OUT/decode_bench.log"
# The plan the pipeline prints for the same requests (merged decode stage, both decoders counted at once).
for size in "--width 512 --height 288 --num-frames 97" "--width 1280 --height 704 --num-frames 121"; do
  for b in 32GiB 16GiB; do
    # shellcheck disable=SC2086  # $size holds several flags on purpose
    python3 -m ltx2_edge plan --checkpoint-path "$CKPT_DIR/ltx2.safetensors" --gemma-root "$GEMMA_DIR" $size \
      --budget $b --quantization fp8 2>&1 | grep -E "^decode|^total" | sed "s/^/$b $size: /"
  done
done | tee "$OUT/decode_plans.log"
