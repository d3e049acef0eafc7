# Device command (issues 3 and 7, the session's last call): with the calibrated accounting (runtime inside the
# device budget, 256 MiB slack with expandable segments), W1 at 32 / 24 / 16 GiB discrete and 16 / 32 GiB one pool,
# then the ltx-pipelines bf16 CFG baseline on the same box. `run` with carry [".whl", ".snap"].
set -o pipefail
CALL_START=$(date +%s)
source bench/device/prelude.sh
source bench/device/make_full.sh >/dev/null
COMMON=(--checkpoint-path "$CKPT_DIR/ltx2.safetensors" --gemma-root "$GEMMA_DIR" --out-dir "$OUT"
        --call-start "$CALL_START" --deadline-s 545 --hard-deadline-s 590)
python3 bench/reference.py ours "${COMMON[@]}" \
  --only ours-auto-32-discrete,ours-auto-16-discrete,ours-fp8-16-unified,ours-auto-24-discrete,ours-fp8-32-unified
python3 bench/reference.py peers "${COMMON[@]}" --only official-bf16-cfg
python3 bench/budget_proof.py "$OUT/ours.json" --markdown "$OUT/budget_proof.md" | tail -2
python3 bench/reference_table.py "$OUT/peers.json" "$OUT/ours.json" > "$OUT/samebox_table.md"
grep -E "^\| (ltx|ltx2)" "$OUT/samebox_table.md"
