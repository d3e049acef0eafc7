# Device call 15 (fourth session): where pinning streamed blocks spends its time (bench/pin_rates.py: host buffers
# made four ways, the transformer's streamed load with and without this session's three mends), then fresh `generate`
# processes: W1 at 16 GiB (the pinning now faulted in by threads while the resident weights load), the 10 s and 20 s
# clips at 16 GiB (should now capture their graphs inside the room the plan keeps), W1 at 32 GiB cold (the
# checkpoint dropped from the page cache, the disk's rate measured first) and warm, and 768x448 at 32 GiB; calibrate
# runs first (its pinned buffer now measured at a run's size) and the runs are planned with its profile.
# `run` with carry [".whl"]; ~570 s with the checkpoint's generation. Small results go into extras.tgz ($OUT brings
# back at most ~8 files).
set -o pipefail
CALL_START=$(date +%s)
source bench/device/prelude.sh
t() { echo "  t=$(( $(date +%s) - CALL_START )) s"; }
left() { [ $(( $(date +%s) - CALL_START )) -lt "$1" ]; }
X=/tmp/extras; mkdir -p $X
pack() { cp ~/.cache/ltx2-edge/profiles/*.json $X/ 2>/dev/null; tar -czf "$OUT/extras.tgz" -C $X .; }
nproc; cat /sys/kernel/mm/transparent_hugepage/enabled; uname -r
source bench/device/make_full.sh >/dev/null
CK=(--checkpoint-path "$CKPT_DIR/ltx2.safetensors" --gemma-root "$GEMMA_DIR")
t
timeout 150 python3 bench/pin_rates.py --checkpoint-path "$CKPT_DIR/ltx2.safetensors" --resident 30 --sizes 2,8 \
  --json $X/pin_rates.json 2>&1 | grep -v "^\[" | tee $X/pin_rates.txt; t; pack
timeout 150 python3 -m ltx2_edge calibrate --device cuda:0 "${CK[@]}" --quiet > $X/calibrate.txt 2>&1
grep -v "^  \|^Traceback" $X/calibrate.txt | tail -24; t; pack
source bench/device/predict.sh
go w1-16 --budget 16GiB
go c10-16 --budget 16GiB --num-frames 241
grep -h "graph" /tmp/pt/c10-16.log | grep -v "^\[" | tail -2
left 330 && go c20-16 --budget 16GiB --num-frames 481
grep -h "graph" /tmp/pt/c20-16.log 2>/dev/null | grep -v "^\[" | tail -2
drop() { python3 -c "
import os, sys
for p in sys.argv[1:]:
    fd = os.open(p, os.O_RDONLY); os.fsync(fd); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED); os.close(fd)" "$@"; }
if left 420; then
  sync; drop "$CKPT_DIR/ltx2.safetensors"
  python3 - "$CKPT_DIR/ltx2.safetensors" <<'PY' | tee "$OUT/disk_rate.txt"
import os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY); size = os.fstat(fd).st_size; n = 4 * 10**9; buf = bytearray(64 * 2**20)
start = time.perf_counter(); off = size - n; got = 0
while got < n:
    k = os.preadv(fd, [buf], off + got); got += k
took = time.perf_counter() - start
print(f"disk: {got / 1e9:.1f} GB of the checkpoint's cold tail in {took:.2f} s = {got / took / 1e9:.2f} GB/s")
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED); os.close(fd)
PY
  go w1-32-cold --budget 32GiB
  go w1-32 --budget 32GiB
fi
left 480 && go h4-32 --budget 32GiB --width 768 --height 448
left 520 && go h10-32 --budget 32GiB --width 768 --height 448 --num-frames 241
cat "$OUT/prediction.md"
echo "call took $(( $(date +%s) - CALL_START )) s"
