# Device call 5 (issue 15's benchmark, with the code after 2026-12-02's call 3: decoders held for the batch, one CUDA
# step graph per batch, the streamed transformer held through a 16 GiB batch). Same box, one call: the phased engine
# path with its bit-equality check, `serve` 8 W1 clips at 32 and 16 GiB, one long-lived Generator, fresh CLI
# processes. `run` with carry [".whl"].
set -o pipefail
CALL_START=$(date +%s)
source bench/device/prelude.sh
source bench/device/make_full.sh >/dev/null
SB=(--checkpoint-path "$CKPT_DIR/ltx2.safetensors" --gemma-root "$GEMMA_DIR")
t() { echo "  t=$(( $(date +%s) - CALL_START )) s"; }
python3 bench/service_bench.py phased --clips 4 --check 1 --budget 32GiB --out "$OUT/phased_32.json" "${SB[@]}" 2>&1 | tail -2; t
python3 bench/service_bench.py serve --clips 8 --budget 32GiB --out "$OUT/serve_32.json" "${SB[@]}" 2>&1 | tail -2; t
python3 bench/service_bench.py serve --clips 8 --budget 16GiB --port 8124 --out "$OUT/serve_16.json" "${SB[@]}" 2>&1 | tail -2; t
python3 bench/service_bench.py generator --clips 4 --out "$OUT/generator_32.json" "${SB[@]}" 2>&1 | tail -1; t
python3 bench/service_bench.py cli --clips 3 --out "$OUT/cli_32.json" "${SB[@]}" 2>&1 | tail -1; t
echo "call took $(( $(date +%s) - CALL_START )) s"
