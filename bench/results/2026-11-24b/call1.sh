# Device command (issue 3, call 1 of this session's three on one warm box): W1, default quantization, discrete GPU
# at 32 (cold, then warm) / 24 / 16 GiB with the default allocator choice (expandable segments), then 32 and 16 GiB
# again with PyTorch's caching allocator: reserved vs allocated vs predicted per stage, and the speed of each.
# `run` with carry [".whl", ".snap"]. $OUT: ours.json, caching/ours.json, budget_proof.md, logs.
set -o pipefail
CALL_START=$(date +%s)
source bench/device/prelude.sh
source bench/device/make_full.sh >/dev/null
REF=(python3 bench/reference.py ours --checkpoint-path "$CKPT_DIR/ltx2.safetensors" --gemma-root "$GEMMA_DIR"
     --call-start "$CALL_START" --deadline-s 560 --hard-deadline-s 590)
"${REF[@]}" --out-dir "$OUT" --only ours-auto-32-discrete-cold,ours-auto-32-discrete,ours-auto-24-discrete,ours-auto-16-discrete
"${REF[@]}" --out-dir "$OUT/caching" --cuda-allocator caching --only ours-auto-32-discrete-caching,ours-auto-16-discrete-caching
python3 bench/budget_proof.py "$OUT/ours.json" "$OUT/caching/ours.json" --markdown "$OUT/budget_proof.md" | tail -3
