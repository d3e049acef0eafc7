# Device call 1 (issue 14): the engine refactor before/after on one box. W1 (512x288, 97 frames, 20 steps, CFG,
# default fp8) at 32 GiB and 16 GiB discrete, each from the tree before the change (commit 7322540, unpacked into
# .old/ by `git archive`) and after it, in fresh processes; a cold warm-up run first so both sides read a
# page-cached checkpoint. `run` with carry [".whl", ".old"].
set -o pipefail
CALL_START=$(date +%s)
source bench/device/prelude.sh
source bench/device/make_full.sh >/dev/null
AB=(--dir /tmp/ab --checkpoint-path "$CKPT_DIR/ltx2.safetensors" --gemma-root "$GEMMA_DIR")
run() { python3 bench/engine_ab.py run "${AB[@]}" "$@" 2>&1 | grep -vE "^\[(denoise|decode)\] (step|video chunk)" | tee -a "$OUT/ab.log"; }
run --src src --label warmup-cold --budget 32GiB
for budget in 32 16; do
  run --src .old/src --label old-$budget --budget ${budget}GiB
  run --src src --label new-$budget --budget ${budget}GiB
done
# Again at 32 GiB, the other order: is the old path deterministic, and what is the noise between two runs?
run --src src --label new-32b --budget 32GiB
run --src .old/src --label old-32b --budget 32GiB
python3 bench/engine_ab.py compare --dir /tmp/ab --out "$OUT/engine_ab.json" | tee "$OUT/compare.txt"
echo "call took $(( $(date +%s) - CALL_START )) s"
