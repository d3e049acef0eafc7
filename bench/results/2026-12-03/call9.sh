# Device call 9, on the box call 8 left warm (its checkpoint, wheels and calibrated profile still there). Issue 15:
# `serve` 8 W1 clips at 16 GiB, 6 sequential clips from one long-lived Generator, the first 3 fresh CLI processes.
# Carries the first half of Ray's wheel for call 10. `run` with carry [".rayA"].
set -o pipefail
CALL_START=$(date +%s)
cp .rayA/raypart.00 /tmp/ && echo "ray part 1 kept in /tmp"
source bench/device/prelude.sh
source bench/device/make_full.sh >/dev/null
CK=(--checkpoint-path "$CKPT_DIR/ltx2.safetensors" --gemma-root "$GEMMA_DIR")
t() { echo "  t=$(( $(date +%s) - CALL_START )) s"; }
t
python3 bench/service_bench.py serve --clips 8 --budget 16GiB --port 8124 --out "$OUT/serve_16.json" "${CK[@]}" 2>&1 | tail -2; t
python3 bench/service_bench.py generator --clips 6 --out "$OUT/generator_32.json" "${CK[@]}" 2>&1 | tail -1; t
python3 bench/service_bench.py cli --clips 3 --out "$OUT/cli_32a.json" "${CK[@]}" 2>&1 | tail -1; t
echo "call took $(( $(date +%s) - CALL_START )) s"
