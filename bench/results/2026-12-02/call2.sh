# Device call 2 (issue 15): 8 W1 clips submitted at once to `ltx2-edge serve` at 32 GiB and at 16 GiB, against 3
# sequential clips from one long-lived Generator and 3 fresh CLI processes (fewer than 8: the 10-minute call), same
# box. `run` with carry [".whl"].
set -o pipefail
CALL_START=$(date +%s)
source bench/device/prelude.sh
source bench/device/make_full.sh >/dev/null
SB=(--checkpoint-path "$CKPT_DIR/ltx2.safetensors" --gemma-root "$GEMMA_DIR")
python3 bench/service_bench.py cli --clips 1 --out /tmp/warm.json "${SB[@]}" | tee "$OUT/warmup.txt"  # page cache
python3 bench/service_bench.py serve --clips 8 --budget 32GiB --out "$OUT/serve_32.json" "${SB[@]}" 2>&1 | tail -3
python3 bench/service_bench.py serve --clips 8 --budget 16GiB --port 8124 --out "$OUT/serve_16.json" "${SB[@]}" 2>&1 | tail -3
python3 bench/service_bench.py generator --clips 3 --out "$OUT/generator_32.json" "${SB[@]}" 2>&1 | tail -1
python3 bench/service_bench.py cli --clips 3 --out "$OUT/cli_32.json" "${SB[@]}" 2>&1 | tail -1
echo "call took $(( $(date +%s) - CALL_START )) s"
