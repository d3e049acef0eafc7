# Device command (issue 7, after the same-box pair showed loading is where our end-to-end time goes): resident
# loads through the new pinned-staging reader against safetensors' get_tensor (bench/load_speed.py, alternating,
# page-cached), then our default W1 run cold and warm and the ltx-pipelines bf16 CFG baseline, on one box.
# `run` with carry [".whl", ".snap"]. $OUT: load_speed.json/.log, ours.json, peers.json, samebox_table.md.
set -o pipefail
CALL_START=$(date +%s)
source bench/device/prelude.sh
source bench/device/make_full.sh >/dev/null
python3 bench/load_speed.py --checkpoint-path "$CKPT_DIR/ltx2.safetensors" --gemma-root "$GEMMA_DIR" \
  --out "$OUT/load_speed.json" --repeats 2 2>&1 | tee "$OUT/load_speed.log" | grep "^\[load_speed\]"
COMMON=(--checkpoint-path "$CKPT_DIR/ltx2.safetensors" --gemma-root "$GEMMA_DIR" --out-dir "$OUT"
        --call-start "$CALL_START" --deadline-s 560 --hard-deadline-s 590)
python3 bench/reference.py ours "${COMMON[@]}" --only ours-auto-32-discrete-cold,ours-auto-32-discrete
python3 bench/reference.py peers "${COMMON[@]}" --only official-bf16-cfg
python3 bench/reference_table.py "$OUT/peers.json" "$OUT/ours.json" | tee "$OUT/samebox_table.md" | grep -E "^\| (ltx|ltx2)"
