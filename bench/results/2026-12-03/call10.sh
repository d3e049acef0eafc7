# Device call 10, on the box calls 8-9 left warm. Issue 18: one Ray Serve replica against plain `serve`, same box
# (bench/ray_overhead.py). Issue 15: 3 more fresh CLI processes. Ray's wheel arrives in two halves (79 MB is
# more than one call carries): the first kept in /tmp by call 9. `run` with carry [".rayB"].
set -o pipefail
CALL_START=$(date +%s)
source bench/device/prelude.sh
source bench/device/make_full.sh >/dev/null
RAYWHL=/tmp/ray-2.60.0-cp312-cp312-manylinux2014_x86_64.whl
cat /tmp/raypart.00 .rayB/raypart.01 > $RAYWHL && md5sum $RAYWHL
python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site $RAYWHL .rayB/*.whl || exit 1
python3 -c "import ray, ray.serve; print('ray', ray.__version__)" || exit 1
CK=(--checkpoint-path "$CKPT_DIR/ltx2.safetensors" --gemma-root "$GEMMA_DIR")
t() { echo "  t=$(( $(date +%s) - CALL_START )) s"; }
t
python3 bench/ray_overhead.py "${CK[@]}" --budget 32GiB --clips 3 --warmup 1 --rounds 1 --out "$OUT/ray_overhead.json" 2>&1 \
  | tee "$OUT/ray_overhead.log" | tail -8; t
python3 bench/service_bench.py cli --clips 3 --out "$OUT/cli_32b.json" "${CK[@]}" 2>&1 | tail -1; t
echo "call took $(( $(date +%s) - CALL_START )) s"
