# Device command (issue 3): after the file source's reads went to 4 threads, W1 at 16 GiB one pool (fp8 and bf16
# streaming from the file), 32 GiB one pool, 16 GiB discrete; budget proof. `run` with carry [".whl", ".snap"].
set -o pipefail
CALL_START=$(date +%s)
source bench/device/prelude.sh
source bench/device/make_full.sh >/dev/null
python3 bench/reference.py ours --checkpoint-path "$CKPT_DIR/ltx2.safetensors" --gemma-root "$GEMMA_DIR" \
  --out-dir "$OUT" --call-start "$CALL_START" --deadline-s 560 --hard-deadline-s 590 \
  --only ours-auto-16-discrete,ours-fp8-16-unified,ours-fp8-32-unified,ours-bf16-16-unified
python3 bench/budget_proof.py "$OUT/ours.json" --markdown "$OUT/budget_proof.md" | tail -2
